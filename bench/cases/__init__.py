"""One module per benchmark of issue 6; each returns figures for bench/report.py."""
