"""ASC-Net (Dey & Hong, MICCAI 2021 and its journal version): papers 000 and 001."""
