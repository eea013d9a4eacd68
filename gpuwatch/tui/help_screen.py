"""The help screen: every key, what each pane shows, and how to read measured/derived/modelled."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from gpuwatch.tui.throttle import XID_MEANINGS

HELP_MARKDOWN_HEAD = """\
# gpuwatch

| key | does |
|---|---|
| `1` … `6` | live · roofline · cost · plan · compare · power (outside a form field) |
| `F1` … `F6`, `alt+1` … `alt+6` | the same panes from anywhere, a form field too |
| `escape` | leave a form field (then the number keys switch panes again) |
| `F12` · `F10` | help · quit, from inside a form field (where `?` and `q` type) |
| `[` `]` or click a card | select the previous / next GPU (processes, roofline and cost follow it) |
| arrow keys, on the cards | select the GPU left, right, above or below |
| `ctrl+p` | command palette: panes and GPUs by name |
| `y` | in plan/compare: copy this what-if as a `gpuwatch plan …` command |
| `s` | in compare: sort by the next column |
| `?` | this help · `escape` closes it |
| `q` | quit · `ctrl+c` twice also quits |
| click a process table header | sort the processes by it (the selected GPU's stay first) |

## The power pane
The cap the planner's power model advises per GPU from the live bound and the measured board power
(mean of the last polls), as `gpuwatch advise power-limit` computes it: **modelled**, not measured.
Memory-bound decode loses little at a lower cap; compute-bound work keeps the default. It is
recomputed every few seconds and says which poll it came from.

## Reading the live view
- **SM busy / MC busy** are NVML duty cycles: the share of time a kernel ran / memory was read or
  written. MC busy is *not* bandwidth: a card can be 100 % MC-busy at a fraction of its bandwidth.
- **bw** is attained memory bandwidth, labelled by how it was obtained:
  *measured* (GPM DRAM activity, Hopper and newer), *derived* (serving-engine tokens/s × the model's
  bytes per token), *modelled* (the declared workload projected on the roofline).
- **temp** marks the slowdown threshold with `┃`; badges show throttle reasons while they are active:
  red = hardware slowdown, orange = driver power/thermal cap, blue = sync boost.
- **XID n** badge: the card's last Xid error (the driver's error report); what the code means is in the
  table below and in the badge's tooltip.
- a **lost** card (fallen off the bus) or a **stale** one (no fresh reading) shows only that: its last
  values are not shown as if they were current.
- With two lines per GPU (small terminals), the second line is bandwidth, PCIe tx/rx and the badges.
- **fan** is *passive* on cards without a fan of their own (SXM, passively cooled PCIe); **perf** is the
  performance state (P0 = full clocks); **mem** is the HBM/GDDR temperature where the card reports it.

## Planning
Every change in the form updates the answer at once; there is no submit button. The form shows only
the fields the chosen mode uses (LoRA rank for LoRA/QLoRA, ZeRO stage for full training, link and
parallelism for inference on more than one GPU). `y` copies the what-if as `gpuwatch plan cost …`
(inference) or `gpuwatch plan train …` (training modes).

The Compare pane prices each GPU at its catalog list price, your config's `[gpu_prices]`, or the price
typed in the Plan form; datacenter GPUs have no list price until you give one.
"""


def _xid_table() -> str:
    rows = "\n".join(f"| {code} | {meaning} |" for code, meaning in XID_MEANINGS.items())
    return (
        "\n## Xid codes\nFrom NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors); any other code: "
        "see the catalog.\n\n| Xid | means |\n|---|---|\n" + rows + "\n"
    )


HELP_MARKDOWN = HELP_MARKDOWN_HEAD + _xid_table()


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP_MARKDOWN)
