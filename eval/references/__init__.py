"""Published reference numbers (YAML) for eval.leaderboard; a package only so that installs ship them."""
