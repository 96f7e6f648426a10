"""Machine profiles: data files (one .toml per machine) and their loader."""
