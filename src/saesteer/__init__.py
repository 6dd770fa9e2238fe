"""saesteer: does a more interpretable SAE steer better?

The importable logic of the Snakemake workflow in this repository. Every stage
(models, corpora, activation caching, SAE training, evaluations, aggregation) is a
module here, tested without Snakemake; ``workflow/scripts`` only translate the
``snakemake`` object into calls of these functions.
"""

__version__ = "0.1.0"
