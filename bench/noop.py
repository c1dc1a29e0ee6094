"""The no-op django-q2 task the runtime benchmark measures the queue's own rate with."""


def mark(path):
    with open(path, "a") as marks:
        marks.write("x\n")
