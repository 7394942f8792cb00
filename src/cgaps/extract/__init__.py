"""Extract stage (``cgaps extract``): SAE concept saliency s_c(x) per item.

:mod:`cgaps.extract.stage` tokenises the run's conversations, reads the residual stream
through a reader model, encodes it with the SAE, pools per item and writes
``saliency.parquet`` from resumable shards.
"""
