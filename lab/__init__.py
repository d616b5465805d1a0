"""The lab: what measures and trains the NLU offline (the harness, calibration, the public sets, training).

Nothing here runs in the web or worker processes (``tests/test_layout.py`` checks it); it needs
``requirements-train.txt``.
"""
