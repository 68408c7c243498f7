"""One module per scenario of bench/run.py; each has `run(args)` taking run.py's options."""
