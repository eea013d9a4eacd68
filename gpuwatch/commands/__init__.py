"""One module per `gpuwatch` sub-command; each exposes register(subparsers) and run(args) -> int."""
