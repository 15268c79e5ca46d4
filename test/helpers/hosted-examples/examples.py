import os, base64
import requests
from pathlib import Path
api_key = os.environ["MSF_API_KEY"]
resp = requests.post(
"https://api.msightflow.ai/v1/segment/interactive",
headers={"Authorization": f"Bearer {api_key}"},
files={"image": Path("image.jpg").read_bytes()},
data={
"points": '[{"x": 320, "y": 240, "label": 1}]', # 1 = foreground
"return_overlay": "true",
},
)
result = resp.json()
# Save the mask
Path("mask.png").write_bytes(base64.b64decode(result["mask"]))
print("bbox:", result["bbox"], "confidence:", result["confidence"])
# "Everything mode": auto-mask every object in the image.
resp = requests.post(
"https://api.msightflow.ai/v1/segment/everything",
headers={"Authorization": f"Bearer {api_key}"},
files={"image": Path("image.jpg").read_bytes()},
data={"points_per_side": "16"}, # 4 (coarse) - 32 (fine)
)
result = resp.json()
# result["masks"]: list of {mask: base64, bbox, confidence}
print(f"Found {len(result['masks'])} distinct objects")
