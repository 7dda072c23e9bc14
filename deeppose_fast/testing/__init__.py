"""Generated data with a known answer, for tests and for `deeppose-fast doctor`'s GPU parity checks
(``pipeline/parity.py``): ``dots`` writes dot-people shards whose crops can be checked pixel by pixel, ``runs`` a run folder
holding one checkpoint of a freshly initialised network.
Training, evaluation and prediction never import it."""
