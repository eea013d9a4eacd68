"""How much of the past the TUI draws, so that the session is opened keeping just that (before Textual is
imported: see ``first_frame``)."""

#: points kept for sparklines and the roofline trail
SPARK_POINTS = 120
TRAIL_POINTS = 60
#: History points the TUI keeps per GPU: its sparklines' (the power mean and the assessor's rates read
#: fewer); History's 15-minute default is ~4.5 MiB for eight GPUs that nothing here would show
HISTORY_POINTS = SPARK_POINTS
