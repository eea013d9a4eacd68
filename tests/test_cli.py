"""The entry point: version, help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gpuwatch import __version__
from gpuwatch.cli import main, parse_args


def test_version_prints_package_version(capsys) -> None:
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"gpuwatch {__version__}"


def test_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuwatch", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("plan", "exporter", "record", "doctor"):
        assert name in out.stdout


def _imported_after(argv: list[str]) -> set[str]:
    """The gpuwatch modules loaded by parsing ``argv`` (in a fresh interpreter: this one has them all)."""
    code = (
        "import sys, json; from gpuwatch.cli import parse_args; a = parse_args(json.loads(sys.argv[1])); "
        "print(json.dumps([m for m in sys.modules if m.startswith('gpuwatch.commands.')]))"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


_WATCHING = """
import json, sys
from gpuwatch.cli import parse_args
from gpuwatch.commands.tui import build_app
from gpuwatch.model import llm
app = build_app(parse_args(sys.argv[1:]))
app.feed.source.stop()
planner = ("whatif", "serving", "engine_memory", "finetune", "sweep", "throughput", "memory", "quant")
print(json.dumps({
    "models_read": llm._by_id.cache_info().currsize,
    "planner": sorted(m for m in planner if f"gpuwatch.model.{m}" in sys.modules),
    "rack_client": "gpuwatch.telemetry.prometheus_rack" in sys.modules,
}))
"""


@pytest.mark.parametrize(
    ("workload", "models_read"), [((), 0), (("--workload", "llama-3-8b:fp16:batch=4"), 1)]
)
def test_a_session_that_only_watches_loads_neither_the_planner_nor_the_model_catalog(
    workload: tuple[str, ...], models_read: int
) -> None:
    """The TUI's first frame (and the exporter's start) waits on what its session imports: without a
    declared workload that is no model catalog (~50 ms here), no decode model and no planner; a declared
    workload is read and checked at start."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _WATCHING, "--sim", "rtx4090", *workload],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["models_read"] == models_read
    if not workload:
        assert out["planner"] == []
    assert out["rack_client"] is False  # --prometheus is declared, its client loads for a rack run


def test_the_tui_command_line_loads_no_sub_command() -> None:
    """The TUI's first frame waits on what the parser imports: the planner and the exporter stay out."""
    loaded = _imported_after(["--sim", "8xrtx4090", "--interval", "1", "--isolate-nvml"])
    heavy = ("plan", "exporter", "record", "capture", "advise")
    assert not loaded & {f"gpuwatch.commands.{n}" for n in heavy}
    assert "gpuwatch.commands.plan" in _imported_after(["--sim", "rtx4090", "plan", "gpus"])


def test_a_sub_command_loads_only_its_own_module_and_help_still_lists_them_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An exporter need not carry the planner's renderers, the recorder or the capture probe."""
    loaded = _imported_after(["exporter", "--sim", "rtx4090"])
    assert "gpuwatch.commands.exporter" in loaded
    assert not loaded & {f"gpuwatch.commands.{n}" for n in ("plan", "record", "capture", "advise", "doctor")}
    # a sub-command's name as an option's value is not taken for the command
    assert parse_args(["--config", "plan", "exporter", "--sim", "rtx4090"]).command == "exporter"
    with pytest.raises(SystemExit):
        main(["exporter", "--help"])
    assert "--listen" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    for name in ("plan", "exporter", "record", "doctor", "advise", "capture"):
        assert name in listing
    assert "Prometheus exporter: GPU readings" in listing


def test_a_mistake_on_the_short_path_gets_the_full_parsers_message(capsys) -> None:
    assert main(["--sim", "rtx4090", "plam"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'plam'" in err and "plan" in err and err.count("\n") == 1
    assert main(["--interval", "0"]) == 2
    assert "--interval = '0' is not allowed" in capsys.readouterr().err


def test_nvml_runs_in_process_unless_isolated() -> None:
    """The default TUI reads NVML in its own process (as nvitop); --isolate-nvml puts it in a child."""
    from gpuwatch.cli import parse_args
    from gpuwatch.commands.tui import build_app
    from gpuwatch.telemetry.history import DEFAULT_CAPACITY
    from gpuwatch.telemetry.nvml_supervisor import NvmlSupervisor
    from gpuwatch.telemetry.poller import NvmlPoller
    from gpuwatch.tui.history_span import SPARK_POINTS

    for argv, kind in (([], NvmlPoller), (["--isolate-nvml"], NvmlSupervisor)):
        app = build_app(parse_args(["--sim", "rtx4090", *argv]))
        try:
            assert type(app.feed.source) is kind, argv  # type: ignore[attr-defined]
            # the history it keeps is what the sparklines show, not the exporter's 15 minutes
            assert app.feed.source.history.capacity == SPARK_POINTS < DEFAULT_CAPACITY
        finally:
            app.feed.stop()


_COLLECTOR_DURING_A_COMMAND = """
import gc, sys
import gpuwatch.commands.doctor as doctor
from gpuwatch.__main__ import entry
doctor.run = lambda args: print("collector on" if gc.isenabled() else "collector off") or 0
sys.argv = ["gpuwatch", "doctor"]
sys.exit(entry())
"""


def test_the_program_starts_without_the_cyclic_collector_and_a_command_runs_with_it() -> None:
    """Start-up's objects live as long as the process, so it starts with the collector off; a command
    (a long-running exporter above all) must run with it on, or its cycles would never be freed."""
    done = subprocess.run(
        [sys.executable, "-c", _COLLECTOR_DURING_A_COMMAND], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "collector on"
