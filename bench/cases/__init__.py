"""One module per benchmark; each returns figures for bench/report.py."""
