"""medseg: universal, efficient medical image segmentation.

Layers, bottom to top: errors -> formats -> io -> viz -> data -> models -> engines -> infer -> eval -> train -> serve -> demo -> cli

A module imports only from its own layer or the layers below it (``tests/test_layers.py`` reads
every import, lazy ones included, and fails on an upward import or a circle):

* ``errors``: the one error type of user mistakes (:class:`~medseg.errors.InputError`) and its kin.
* ``formats``: the file suffixes medseg reads and writes, in one list each.
* ``io``: read and write images, volumes, DICOM and label maps (``(C, Z, Y, X)`` arrays with
  geometry), the output policy (never overwrite without asking, never an input, atomic, umask).
* ``viz``: pictures of an image with a mask and prompts.
* ``data``: datasets and their one case type (:class:`~medseg.data.cases.Case`, 2D, 3D or a patch),
  masks and prompts derived from them (components, boxes, deepest points, simulated clicks, Dice),
  preprocessing and augmentation, dataset checks and conversion.
* ``models``: encoders, prompt encoder, mask decoders, the registry and weights.
* ``engines``: ONNX export of the promptable models and the engines that run them (torch,
  onnxruntime, OpenVINO) at fp32, bf16, fp16 storage or int8, behind the model's own interface.
* ``infer``: the Predictor (encode once, prompt many times), volumes, files, automatic mode.
* ``eval``: metrics, prompt protocols over a dataset, reports and figures.
* ``train``: the one loop, its objectives, checkpoints, embedding caches, torchrun.
* ``serve``: ``medseg serve``, the browser page and its JSON API over the Predictor.
* ``demo``, ``cli``: the command line.
"""

__version__ = "0.1.0"
