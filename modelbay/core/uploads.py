"""Where the file of an upload waits while Django receives it (settings.FILE_UPLOAD_HANDLERS)."""

from contextlib import contextmanager

from django.core.files import uploadhandler

from modelbay.core.errors import InsufficientStorage, is_disk_full


class TemporaryFileUploadHandler(uploadhandler.TemporaryFileUploadHandler):
    """Django's, except when a write fails (a full disk): Django would keep the partial
    file until the request object is collected; here it is removed at once, and a full
    disk refuses the request with ``InsufficientStorage`` (507) rather than a 500."""

    def new_file(self, *args, **kwargs):
        with self._removed_on_failure():
            super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        with self._removed_on_failure():
            return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        with self._removed_on_failure():
            self.file.flush()  # the last buffered bytes meet the full disk here, not later
            return super().file_complete(file_size)

    @contextmanager
    def _removed_on_failure(self):
        try:
            yield
        except OSError as error:
            if hasattr(self, "file"):
                try:
                    self.file.close()  # a NamedTemporaryFile: closing it removes it
                except OSError:
                    pass  # its buffer could not be flushed; the file is removed all the same
            if is_disk_full(error):
                raise InsufficientStorage() from error
            raise
