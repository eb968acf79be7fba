"""The paper's cluttered-MNIST study (section 4.1, Figure 4b-e): plan.py (models, configs, runs),
report.py (tables), figures.py, run.py (the restartable driver: python -m experiments.cluttered_mnist_study)."""
