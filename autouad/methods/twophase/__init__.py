"""Zhang, Deng & Li (SASHIMI 2023): unsupervised liver tumour segmentation with random-shape pseudo
anomalies and two-phase training (paper 004), and its DRAEM baseline (Zavrtanik et al., ICCV 2021)."""
