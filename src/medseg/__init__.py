"""medseg: universal, efficient medical image segmentation.

Pipeline order of the sub-packages: ``io`` (read/write images and volumes) -> ``models``
(encoders, prompt encoder, mask decoder, registry) -> ``infer`` (Predictor) -> ``eval``
(metrics, prompt protocols, reports) -> ``cli``.
"""

__version__ = "0.1.0"
