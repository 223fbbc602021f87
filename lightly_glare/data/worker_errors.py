"""Image errors of DataLoader workers, delivered to the main process intact.

torch re-raises an exception of a worker process by calling its class with one
string, the whole worker traceback; :class:`~lightly_glare.data.ImageReadError`
takes two arguments, so the user got a ``RuntimeError`` with 60 lines of
traceback instead of the one-line message. Here the worker catches the error
and hands it over as a value (it pickles, :meth:`ImageReadError.__reduce__`),
and the main process raises it as it is: with ``workers=0`` or more, the user
sees the same message naming the file.

Examples:
    >>> loader = DataLoader(CarryErrors(dataset), collate_fn=collate_carrying_errors,
    ...                     num_workers=4)
    >>> for batch in raise_carried(loader):
    ...     ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from torch.utils.data import Dataset, default_collate

from lightly_glare.data.image_io import ImageReadError


class CarryErrors(Dataset[Any]):
    """Items of ``dataset``; an item whose image cannot be read is its error.

    Attributes:
        dataset: The wrapped dataset.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        """Items of the wrapped dataset."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        """The item, or the :class:`ImageReadError` its loading raised."""
        try:
            return self.dataset[index]
        except ImageReadError as error:
            return error


def collate_carrying_errors(
    items: Sequence[Any], collate: Callable[[Any], Any] = default_collate
) -> Any:
    """The batch of ``items``, or the first error among them.

    Args:
        items: Items of a :class:`CarryErrors` dataset.
        collate: Collates items that are all fine.

    Returns:
        ``collate(items)``, or the first :class:`ImageReadError` of ``items``.
    """
    for item in items:
        if isinstance(item, ImageReadError):
            return item
    return collate(items)


def raise_carried(batches: Iterable[Any]) -> Iterator[Any]:
    """The batches; raises an :class:`ImageReadError` that comes as a batch.

    Raises:
        ImageReadError: A file of the batch could not be read (the message names
            it, as when it is read in the main process).
    """
    for batch in batches:
        if isinstance(batch, ImageReadError):
            raise batch
        yield batch
