"""The lab: research and training code, apart from the runtime.

PPO training of TRIM-Agg/Seq (:mod:`~langchain_trim.lab.ppo`, :mod:`~langchain_trim.lab.train`,
torch twins in :mod:`~langchain_trim.lab.nets`, recorded-trace replay in
:mod:`~langchain_trim.lab.replay`), the calibrated simulator and its fitting
(:mod:`langchain_trim.lab.sim`), weak step labels (:mod:`~langchain_trim.lab.weak_labels`)
and probe-PRM training on ProcessBench (:mod:`~langchain_trim.lab.prm_training`).

Imports flow one way: the lab uses the runtime (graph, policies, PRMs, evaluation), the
runtime never imports the lab (``tests/test_layout.py`` checks it), so ``pip install
langchain-trim`` serves TRIM without numpy, torch or the training code.  Only ``trim
train`` loads the lab, when it runs.
"""
