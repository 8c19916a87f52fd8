"""Reports and exports of a study's results."""
