"""The four stages, each one class around its model: text_to_image, background, image_to_3d, export."""
