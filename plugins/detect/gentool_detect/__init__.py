"""gentool-detect: was this image generated? A calibrated fake-image detector for gentool."""
