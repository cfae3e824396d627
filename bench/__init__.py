"""``make bench``: every benchmark of the service issues in one run (``python -m bench.run``).

Results land in ``var/bench/results.json`` (one object per figure) and ``var/bench/results.md``
(the same as a Markdown table, with the date and the machine, for the README).
"""
