"""``python -m eval.lmms run|tasks|compare ...`` (see eval/lmms/run.py)."""

from eval.lmms.run import main

if __name__ == "__main__":
    raise SystemExit(main())
