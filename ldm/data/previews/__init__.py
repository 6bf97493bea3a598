"""The `previews` text-image data set of the released text2img256 config: never released."""
