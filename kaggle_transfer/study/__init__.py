"""The paper's experiment: ImageNet models × a hyperparameter grid per dataset, best score per model,
and ImageNet top-1 against task score. `kt study` and `kt study report`."""
