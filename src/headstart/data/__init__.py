"""Data: readers, validation and splits."""

from .dataset import Dataset, Skipped
from .readers import from_arrays, load_data, read_image_folder, read_table
from .splits import Splits, split
from .validate import Finding, Report, validate

__all__ = ["Dataset", "Skipped", "Finding", "Report", "Splits", "from_arrays", "load_data",
           "read_image_folder", "read_table", "split", "validate"]
