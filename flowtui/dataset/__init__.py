"""Dataset runs: truncation sweeps over a whole VQA or caption dataset (the paper's Fig. 5).

Plain Python, no UI: readers (`readers`), scoring rules (`scoring`), the run loop over the
Engine interface with one file per process (`runner`, `dist`), the results folder (`results`),
curves with 95% intervals and the dataset cliff (`summary`), plots (`plots`) and provenance.

    from flowtui.dataset.readers import open_dataset
    from flowtui.dataset.runner import run_dataset, finalize
"""
