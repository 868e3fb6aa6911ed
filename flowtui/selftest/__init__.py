"""What `flowtui doctor` checks with, shipped so it runs on any install (the tests use it too).

- `tiny/`: a tiny random model of every supported family, built from configs (no download);
- `tiny_llava`: the two tiny LLaVA geometries the engine tests share;
- `reference`: independent eager references (shares, CAM, a no-cache masked greedy loop),
  written from DESIGN.md and sharing no code with `flowtui.engine` beyond processor loading;
- `checks`: the environment checks and the self-test `flowtui doctor` runs.

Nothing here imports Textual or Rich (tests/project/test_boundaries.py): doctor's table is drawn by
the CLI.
"""
