"""Pictures of the machine (`memsim plot`): pure functions from the services'
answers to PNG files, with matplotlib's Agg backend."""
