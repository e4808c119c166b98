"""The command-line tools, outside the library core: one module per ``python -m sprinter_ext`` command.

=================  ==========================================================
``generate``       :mod:`.generate`: text streamed to stdout, stats to stderr
``chat``           :mod:`.chat`: multi-turn chat in the terminal (/reset, /stats, /exit)
``bench``          :mod:`.bench`: every method on held-out prompts, plus HF baselines
``sprinter-sweep`` :mod:`.sprinter_sweep`: SPRINTER's speed/fidelity frontier
``train-verifier`` :mod:`.train_verifier`: a verifier for the default pair
``train-draft``    :mod:`.train_draft`: the default pair's draft
``train-head``     :mod:`.train_head`: a draft head for a target (resumable)
=================  ==========================================================

``serve`` lives in :mod:`sprinter_ext.serve`, ``info`` in :mod:`sprinter_ext.__main__`
(the router). :mod:`._common` holds what every parser shares (shown defaults,
``--threads``). Each module's ``main(argv) -> int`` owns its options; nothing here is
imported by ``import sprinter_ext``. Text and prompts come from :mod:`sprinter_ext.data`.
"""
