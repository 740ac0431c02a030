// A pool of the buffers that codesign's CPU kernels write their outputs into.
//
// A training loop asks for tensors of the same few sizes at every step. Fresh multi-megabyte
// allocations come from mmap (or from a heap that glibc trims back to the kernel when they are
// freed), so every step page-faults and zero-fills them again before the kernel can stream
// into them: with half a dozen 4 MB gradients alive at once that cost more than the kernel's
// own work. The pool keeps freed buffers, by exact byte size, and hands them out again.
//
// Buffers reach torch as DLPack tensors whose deleter gives the buffer back to the pool, so a
// buffer is recycled exactly when torch frees the last tensor that uses it, whichever thread
// does it. At most `limit` bytes are kept idle; beyond that freed buffers go back to the system.
#include "buffers.h"

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace codesign {
namespace {

constexpr size_t kAlign = 64;  // a cache line, as torch's own CPU allocator aligns

class Pool {
 public:
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = idle_.find(bytes);
      if (it != idle_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= bytes;
        ++reused_;
        return p;
      }
      ++fresh_;
    }
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    return std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  }

  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (idle_bytes_ + bytes <= limit_) {
        idle_[bytes].push_back(p);
        idle_bytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  void set_limit(size_t bytes) {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = bytes;
      for (auto& [size, list] : idle_) {
        while (!list.empty() && idle_bytes_ > limit_) {
          drop.push_back(list.back());
          list.pop_back();
          idle_bytes_ -= size;
        }
      }
    }
    for (void* p : drop) std::free(p);
  }

  PoolStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {idle_bytes_, limit_, fresh_, reused_};
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> idle_;
  size_t idle_bytes_ = 0, limit_ = size_t(512) << 20;
  uint64_t fresh_ = 0, reused_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static destruction
  return *p;
}

struct Owner {
  size_t bytes;
  std::vector<int64_t> shape, strides;
};

void release(DLManagedTensor* t) {
  auto* owner = static_cast<Owner*>(t->manager_ctx);
  pool().give(t->dl_tensor.data, owner->bytes);
  delete owner;
  delete t;
}

}  // namespace

DLManagedTensor* pooled_tensor(uint8_t code, uint8_t bits, const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& strides) {
  size_t extent = 1;  // elements up to the last one addressed, + 1
  bool empty = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) empty = true;
    extent += static_cast<size_t>(shape[d] - 1) * static_cast<size_t>(strides[d]);
  }
  const size_t bytes = empty ? 0 : extent * (bits / 8);
  auto* owner = new Owner{bytes, shape, strides};
  auto* t = new DLManagedTensor();
  t->dl_tensor.data = pool().take(bytes);
  t->dl_tensor.device = {kDLCPU, 0};
  t->dl_tensor.ndim = static_cast<int32_t>(shape.size());
  t->dl_tensor.dtype = {code, bits, 1};
  t->dl_tensor.shape = owner->shape.data();
  t->dl_tensor.strides = owner->strides.data();
  t->dl_tensor.byte_offset = 0;
  t->manager_ctx = owner;
  t->deleter = release;
  return t;
}

void set_pool_limit(size_t bytes) { pool().set_limit(bytes); }

PoolStats pool_stats() { return pool().stats(); }

}  // namespace codesign
