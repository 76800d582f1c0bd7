"""The fitting benchmark (issue 3): synthetic ground truth, accuracy, speed and baselines.

    python -m fitter_backend.bench fit [--quick] [--skip-baselines] [--json PATH]

(``./run.sh bench`` runs it in .venvs/bench, which adds PyTorch for the L-BFGS baseline.)
It generates shots with known truth on the open head and a FLAME-format model with random
bases (:mod:`.problems`), fits them with the joint sequence fit (with and without
E_temporal) and the real-time mode, measures errors (:mod:`.metrics`), solves a prefix of
the first monocular shot with scipy's least_squares and PyTorch L-BFGS on the same energy
(:mod:`.baselines`), and prints tables and the targets met or missed (:mod:`.report`).
"""
