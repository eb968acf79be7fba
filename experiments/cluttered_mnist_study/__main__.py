"""python -m experiments.cluttered_mnist_study: see run.py."""

from experiments.cluttered_mnist_study.run import main

main()
