"""MCQ items, loaders with row-level validation, built-in datasets and seeded splits."""
from .builtin import BUILTIN_DATASETS, load_dataset
from .fewshot import Fewshot, draw_fewshot, group_of
from .items import LETTERS, MCQItem
from .loaders import FieldMap, LoadResult, item_from_row, load_items
from .splits import random_split, sample_items, split_indices, subject_split

__all__ = ["BUILTIN_DATASETS", "FieldMap", "Fewshot", "LETTERS", "LoadResult", "MCQItem",
           "draw_fewshot", "group_of", "item_from_row", "load_dataset", "load_items",
           "random_split", "sample_items", "split_indices", "subject_split"]
