"""Plotly figure builders: pure functions of numbers, no I/O (the callbacks fetch, these draw)."""
