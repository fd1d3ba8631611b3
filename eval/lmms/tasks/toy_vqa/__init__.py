"""lmms-eval task files (YAML + utils.py); a package only so that installs ship them."""
