"""A Ray worker-process setup hook for tests/test_scale_out.py: the first artifact any worker writes
kills that worker mid-build (os._exit inside `cache.build`, after the files are written into the
temporary folder and before it is renamed into place), once per marker file (`COMPSTUDY_TEST_KILL_ONCE`)."""
import os


def kill_first_build():
    from compstudy import cache

    marker = os.environ.get("COMPSTUDY_TEST_KILL_ONCE")
    if not marker:
        return
    original = cache.file_checksums

    def file_checksums(folder):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return original(folder)
        os.write(fd, str(folder).encode())
        os.close(fd)
        os._exit(17)  # killed mid-build: no finally runs, the temporary folder stays behind

    cache.file_checksums = file_checksums
