"""The help screen: every key, what each pane shows, and how to read measured/derived/modelled."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP_MARKDOWN = """\
# gpuwatch

| key | does |
|---|---|
| `1` … `5` | live · roofline · cost · plan · compare |
| `[` `]` or click a card | select the previous / next GPU (processes, roofline and cost follow it) |
| `ctrl+p` | command palette: panes and GPUs by name |
| `y` | in plan/compare: copy this what-if as a `gpuwatch plan …` command |
| `s` | in compare: sort by the next column |
| `?` | this help · `escape` closes it |
| `q` | quit |

## Reading the live view
- **SM busy / MC busy** are NVML duty cycles: the share of time a kernel ran / memory was read or
  written. MC busy is *not* bandwidth: a card can be 100 % MC-busy at a fraction of its bandwidth.
- **bw** is attained memory bandwidth, labelled by how it was obtained:
  *measured* (GPM DRAM activity, Hopper and newer), *derived* (serving-engine tokens/s × the model's
  bytes per token), *modelled* (the declared workload projected on the roofline).
- **temp** marks the slowdown threshold with `┃`; badges show throttle reasons while they are active:
  red = hardware slowdown, orange = driver power/thermal cap, blue = sync boost.
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


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP_MARKDOWN)
