"""TumorTrace: benign/malignant classification of breast lesions in one image slice.

Research and review only; not for diagnosis.
"""
__version__ = "0.1.0"

# Index 0 benign, 1 malignant everywhere; malignant is the positive class of every metric.
CLASSES = ("benign", "malignant")
POSITIVE_CLASS = "malignant"
POSITIVE_INDEX = 1
INTENDED_USE = (
    "Research and review demo only. Not a medical device and not for diagnosis, "
    "screening or any clinical decision."
)
