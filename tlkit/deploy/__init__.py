"""Deployment: a trained model as one exported graph (:mod:`tlkit.deploy.export`) and the pooled
features of a folder of images (:mod:`tlkit.deploy.embed`).

Both sit on top of the chain: they use the trained model (passed in, or loaded by :func:`tlkit.load`),
the backbone builder and the feature store, and nothing below imports them. ``TransferModel.export``
and :func:`tlkit.embed` are the public doors.
"""
