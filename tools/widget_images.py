"""Draw the widget's images at the sizes amoCRM requires (run once; the PNGs are committed).

Needs Pillow, which is not a project dependency: `python -m venv /tmp/img && /tmp/img/bin/pip install
Pillow && /tmp/img/bin/python tools/widget_images.py`. Fonts: Debian's DejaVu.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).resolve().parent.parent / "widget_src" / "images"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
FONT_REGULAR = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
BLUE, DARK, WHITE, LIGHT = (33, 118, 214), (22, 44, 78), (255, 255, 255), (236, 243, 252)

LOGOS = {"logo.png": (130, 100), "logo_main.png": (400, 272), "logo_medium.png": (240, 84),
         "logo_min.png": (84, 84), "logo_small.png": (108, 108),
         "logo_dp.png": (174, 109)}  # the digital pipeline's action (manifest location digital_pipeline)

TOUR = {
    "ru": [("Свой SMS-провайдер для amoCRM", ["Коды входа в Кабинет клиента уходят", "через ваш аккаунт SMS.ru, SMSC и других"]),
           ("Настройка за минуту", ["Выберите провайдера, введите ключ и имя", "отправителя, отправьте тестовое SMS"]),
           ("Видно каждое SMS", ["Статусы доставки, попытки и баланс", "прямо в настройках виджета"])],
    "en": [("Your own SMS provider for amoCRM", ["Client cabinet login codes go out", "through your SMS.ru, SMSC or Twilio account"]),
           ("Set up in a minute", ["Pick a provider, enter its key and a sender", "name, send a test SMS"]),
           ("Every SMS in sight", ["Delivery statuses, attempts and balance", "right in the widget settings"])],
}


def bubble(draw, box, fill):
    x0, y0, x1, y1 = box
    draw.rounded_rectangle(box, radius=(y1 - y0) // 4, fill=fill)
    tail = [(x0 + (x1 - x0) * 0.22, y1 - 1), (x0 + (x1 - x0) * 0.18, y1 + (y1 - y0) * 0.28),
            (x0 + (x1 - x0) * 0.42, y1 - 1)]
    draw.polygon(tail, fill=fill)


def logo(size):
    width, height = size
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    wide = width / height > 2
    box_w = side * 0.86 if wide else width * 0.84
    box_h = side * 0.62
    x0 = (side * 0.08) if wide else (width - box_w) / 2
    y0 = (height - box_h) / 2 - side * 0.06
    bubble(draw, (x0, y0, x0 + box_w, y0 + box_h), BLUE)
    font = ImageFont.truetype(FONT, int(box_h * 0.5))
    draw.text((x0 + box_w / 2, y0 + box_h / 2), "SMS", font=font, fill=WHITE, anchor="mm")
    if wide:
        font = ImageFont.truetype(FONT, int(height * 0.34))
        draw.text((x0 + box_w + side * 0.12, height / 2), "smsgate", font=font, fill=DARK, anchor="lm")
    return image


def tour(title, lines, number, total):
    image = Image.new("RGB", (1188, 616), LIGHT)
    draw = ImageDraw.Draw(image)
    bubble(draw, (80, 170, 400, 370), BLUE)
    draw.text((240, 270), "SMS", font=ImageFont.truetype(FONT, 96), fill=WHITE, anchor="mm")
    size = 40
    while ImageFont.truetype(FONT, size).getlength(title) > 1188 - 470 - 50:
        size -= 1  # the longest title must fit the picture
    draw.text((470, 200), title, font=ImageFont.truetype(FONT, size), fill=DARK)
    body = ImageFont.truetype(FONT_REGULAR, 30)
    for i, line in enumerate(lines):
        draw.text((470, 290 + i * 48), line, font=body, fill=DARK)
    for i in range(total):
        fill = BLUE if i == number else (190, 205, 225)
        draw.ellipse((560 + i * 36, 540, 580 + i * 36, 560), fill=fill)
    return image


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, size in LOGOS.items():
        logo(size).save(OUT / name, optimize=True)
    for lang, pages in TOUR.items():
        for number, (title, lines) in enumerate(pages):
            tour(title, lines, number, len(pages)).save(OUT / f"tour_{number + 1}_{lang}.png", optimize=True)


if __name__ == "__main__":
    main()
