"""Backbones, their layer groups and weights, heads, and the trained TransferModel.

The chain, each module importing only those before it: registry (names) -> pretrained (where
weights come from) -> layouts (LayerGroup objects) -> backbone -> builder; heads; transfer
(TransferModel, load); explain and inspection use only Backbone's public API.
"""
