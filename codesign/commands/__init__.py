"""The subcommands of ``codesign``, one module each, on the top floor: each parses its flags, calls
one library function and prints. A module defines ``register(subparsers)``, adding its parsers with
``set_defaults(func=...)``; ``func(args)`` returns an exit code. Nothing in the library imports them."""
