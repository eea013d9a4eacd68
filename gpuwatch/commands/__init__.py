"""One module per `gpuwatch` sub-command; each exposes register(subparsers) and run(args) -> int.

Each sub-command's one-line help lives here, so that the command line can list every sub-command while
importing only the one it runs (an exporter need not load the planner's renderers or the recorder).
"""

#: sub-command name -> its one-line help, in the order ``gpuwatch --help`` lists them
SUMMARIES = {
    "plan": "what-if planning: memory, throughput, cost, GPUs, parallelism, training",
    "exporter": "Prometheus exporter: GPU readings, roofline position, tokens/s and $/1M tokens",
    "record": "record GPU snapshots to a file for --replay",
    "doctor": "driver/NVML versions and which readings each GPU supports",
    "advise": "advice from the live cards: the power limit to set",
    "capture": "write what this box's NVML answers to one JSON file, for a bug report",
}
