"""The run: its state, its files, the four stages and the loop that repeats them.

- `rundir.py`: RunDir, every file a run writes, named once
- `prompts.py`: the prompts a run sends; `model.py`: the run's model (planted or pretrained)
- `state.py`: RunState, EarlierTarget; `measure.py`: forget score and utility of one model
- `reveal_stage.py`, `sample_stage.py`, `release_stage.py`, `evaluate_stage.py`: the stages
- `loop.py`: run_loop and STAGES; `preflight.py`, `base_run.py`, `lock.py`, `report.py`
"""
