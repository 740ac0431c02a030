// Recycled output buffers of the CPU kernels, handed to torch as DLPack tensors (buffers.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace codesign {

// The DLPack ABI (dmlc/dlpack v0.x), declared here so the extension needs no extra headers.
enum DLDeviceType : int32_t { kDLCPU = 1 };
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // 2: float
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct PoolStats {
  size_t idle_bytes, limit_bytes;
  uint64_t fresh, reused;  // buffers allocated anew / handed out again
};

// A tensor of the given shape and element strides on a pooled buffer; its deleter gives the
// buffer back to the pool.
DLManagedTensor* pooled_tensor(uint8_t code, uint8_t bits, const std::vector<int64_t>& shape,
                               const std::vector<int64_t>& strides);

// At most `bytes` of freed buffers are kept for reuse (the rest is freed at once).
void set_pool_limit(size_t bytes);
PoolStats pool_stats();

}  // namespace codesign
