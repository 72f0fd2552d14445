"""The dense component (PRIME, Dahiya et al., NAACL 2025): an encoder of TF-IDF rows and label prototypes.

    net.py      the encoder and the Label Prototype Network (torch modules)
    loss.py     the dynamic-margin triplet loss over in-batch hard negatives
    train.py    the training loop (one process, or one rank of Ray Train's data parallelism)
    fit.py      beside the trees: train, fit the prior and the fusion on held-out rows, checkpoints
    model.py    the trained part a model bundle stores: encoder weights, prototypes, prior, fusion
    fusion.py   the tree's and the dense scores as one ranking
    senses.py   disentangled prototypes: one per label copy of the tree
"""
