"""Rahman Siddiquee et al. (SASHIMI 2022): HealthyGAN, a one-directional translation from a mixed
(unlabeled) set of images to healthy images, with |x - G(x)| as the anomaly map."""
