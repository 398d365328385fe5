"""A Keras callback that interrupts training at the end of a chosen epoch, before its checkpoint:
what a Ctrl-C or a kill at that moment leaves behind, for the resume tests of train and tune."""

import keras


class Interrupt(Exception):
    pass


class KillAfterEpoch(keras.callbacks.Callback):
    """Raises `Interrupt` at the end of the given (0-based) epoch, before its checkpoint is written."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"killed in epoch {epoch + 1}")
