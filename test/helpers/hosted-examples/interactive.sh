curl -X POST https://api.msightflow.ai/v1/segment/interactive \
-H "Authorization: Bearer $MSF_API_KEY" \
-F "image=@image.jpg" \
-F 'points=[{"x":320,"y":240,"label":1}]' \
-F "return_overlay=true"
