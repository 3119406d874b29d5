"""retail-detect: object detection for retail products.

Data flows one way: VOC XML -> cache (detect.data.cache) -> dataset (detect.data.dataset)
-> model (detect.models) -> postprocess -> drawing/output (detect.viz). ``detect.cli`` is the
only module that parses argv.
"""

__version__ = "0.1.0"
