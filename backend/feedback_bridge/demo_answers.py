"""The demo assistant's canned help desk answers, picked by keyword, and cut into the words it streams."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    keywords: tuple[str, ...]  # a word, a word's start (4+ letters: "print" finds "printer") or a phrase
    example: str  # a question that picks this topic, for suggestions and tests
    answer: str


TOPICS: tuple[Topic, ...] = (
    Topic(("password", "locked", "lockout", "forgot", "reset"), "I forgot my password and I'm locked out.",
          "No problem, you can reset it yourself in a couple of minutes:\n"
          "1. On the sign-in screen choose \"Reset password\".\n"
          "2. Confirm with the Authenticator app or a text message to your registered phone.\n"
          "3. Pick a new password of at least 14 characters; your last 10 cannot be reused.\n"
          "If you are locked out after too many attempts, the account unlocks itself after 15 minutes."),
    Topic(("vpn", "remote", "from home", "tunnel"), "How do I connect to the VPN from home?",
          "Open Northwind Connect from the Start menu (or the menu bar on a Mac), choose the gateway closest to "
          "you and sign in with your usual account. Approve the push notification on your phone; the shield "
          "icon turns green once you are connected. If it keeps spinning, switch off any other VPN first."),
    Topic(("print", "toner", "paper jam", "scan"), "The printer on the 3rd floor says offline.",
          "Printer 3F-East is being serviced until 2 pm. Until then, send your job to 3F-West: it is already "
          "installed on every office laptop and prints double-sided by default. To add another printer, open "
          "Settings > Printers and pick it from the Northwind list."),
    Topic(("mfa", "authenticator", "2fa", "two-factor", "new phone"), "I got a new phone, how do I move MFA?",
          "Before you wipe the old phone, go to mysignins.northwind.example > Security info, add the new phone "
          "with the Authenticator app and make it the default method. Already lost the old one? Call the "
          "help desk on extension 4357 and we will issue a temporary access pass after checking your identity."),
    Topic(("wifi", "wi-fi", "wireless", "guest network"), "How do I get on the office Wi-Fi?",
          "Company laptops join \"Northwind\" automatically with their certificate. For your phone or a visitor, "
          "use \"Northwind-Guest\": the password of the day is on the screens at reception and changes at "
          "midnight. Guest access is internet only, so use the VPN to reach internal sites."),
    Topic(("slow", "sluggish", "freez", "performance", "hangs"), "My laptop is really slow today.",
          "A few things usually fix it:\n"
          "1. Restart: a laptop that has been up for weeks is often waiting for updates.\n"
          "2. Open Task Manager (Ctrl+Shift+Esc) and close anything using lots of memory.\n"
          "3. Check that at least 15 GB of disk space is free.\n"
          "Still slow after that? Open a ticket and we will run a remote health check."),
    Topic(("install", "software", "licen", "download"), "Can I install Visio on my laptop?",
          "Most approved software is in the Company Portal app: search for it and click Install, no admin "
          "rights needed. Visio, Project and other paid tools need a licence, so request them through the "
          "portal's \"Request software\" form; your manager approves it and installation follows within a day."),
    Topic(("teams", "microphone", "headset", "camera", "audio", "webcam"),
          "Nobody can hear me in Teams meetings.",
          "In Teams, click your profile picture > Settings > Devices and pick your headset as both speaker and "
          "microphone, then use \"Make a test call\". Also check the mute switch on the headset cable and that "
          "Windows has not blocked microphone access under Settings > Privacy > Microphone."),
    Topic(("phish", "suspicious", "scam", "spam", "strange email"), "I got a suspicious email asking for my login.",
          "Thanks for checking! Don't click any link or open attachments. Use the \"Report phishing\" button in "
          "Outlook: it sends the message to the security team and removes it from your inbox. If you already "
          "entered your password somewhere, reset it right away and tell us on extension 4357."),
    Topic(("monitor", "dock", "display", "second screen", "external screen"),
          "My second monitor stays black when I dock.",
          "Unplug the dock's power for ten seconds, plug it back in, then reconnect the laptop. Press "
          "Windows+P and choose \"Extend\". If the screen is still black, try another cable; the dock firmware "
          "updater in the Company Portal fixes most docking problems."),
    Topic(("mailbox", "quota", "storage", "onedrive", "disk full", "full"), "My mailbox is full.",
          "Your mailbox holds 50 GB. Turn on the Online Archive in Outlook (File > Tools > Mailbox Cleanup) to "
          "move mail older than a year out of the way automatically, and empty Deleted Items. For files, "
          "OneDrive gives you 1 TB: move large attachments there and share a link instead."),
    Topic(("outlook", "calendar", "sync", "email"), "Outlook isn't syncing my email.",
          "Check the status bar first: \"Working offline\" means the Send/Receive > Work Offline button is on. "
          "If it says connected, close Outlook, start it again, and give it a few minutes. Still stuck? Remove "
          "and re-add your account in the Outlook settings; your mail is on the server, nothing is lost."),
    Topic(("crash", "blue screen", "bsod", "restarts", "reboot"), "My laptop keeps crashing with a blue screen.",
          "Write down the stop code on the blue screen if you can, then start the laptop and install any pending "
          "updates from Settings > Windows Update. If it crashes again within a day, open a ticket with the stop "
          "code: we will swap the laptop and move your files over."),
    Topic(("lost", "stolen", "missing", "left my"), "I left my laptop on the train.",
          "Please call the help desk on extension 4357 (or +1 555 0100 from outside) straight away, even out of "
          "hours. We will lock and, if needed, wipe the device remotely. Your files are in OneDrive, so nothing "
          "is lost, and we can have a replacement ready the next working day."),
    Topic(("bitlocker", "recovery key", "encryption"), "My laptop asks for a BitLocker recovery key.",
          "Sign in to mysignins.northwind.example from another device, open Devices, choose the laptop and click "
          "\"View BitLocker keys\". Type the 48-digit key shown for the matching key ID. This usually happens "
          "after a firmware update and only once."),
    Topic(("salesforce", "sap", "crm", "access request", "permission"), "How do I get access to Salesforce?",
          "Request it in the Company Portal under Access > Business applications. Pick the role your team uses; "
          "your manager gets an approval email, and access is usually ready within four working hours. "
          "You will get an email when it is done."),
    Topic(("ticket", "case", "status", "incident"), "What's the status of my ticket?",
          "You can follow all your tickets at support.northwind.example > My requests, with the latest update "
          "from the engineer. Reply to any ticket email to add information. Urgent and waiting too long? Call "
          "extension 4357 with the ticket number and we will escalate it."),
    Topic(("keyboard", "mouse", "laptop", "hardware", "replace", "broken"), "My laptop keyboard is broken.",
          "Sorry about that! Order a replacement in the Company Portal under Hardware: keyboards, mice and "
          "headsets ship to your office the next working day. For a broken laptop, open a hardware ticket and "
          "bring it to the IT bar on floor 2; we will give you a loaner while it is repaired."),
    Topic(("human", "person", "talk to", "agent", "phone number", "contact", "hours", "opening"),
          "How can I talk to a person?",
          "The service desk is staffed Monday to Friday, 7 am to 7 pm: call extension 4357 (+1 555 0100 from "
          "outside), chat with us in Teams under \"IT Help\", or visit the IT bar on floor 2. Outside those "
          "hours, the phone line still takes urgent security issues like a lost laptop."),
    Topic(("thank", "thanks", "great", "perfect", "cheers"), "Thanks, that worked!",
          "Glad I could help! If anything else comes up, just ask here."),
    Topic(("hello", "hi", "hey", "morning", "afternoon"), "Hi!",
          "Hello! I'm the Northwind IT assistant. I can help with passwords, VPN, printers, email, Teams, "
          "software and hardware requests. What can I do for you?"),
)

FALLBACKS: tuple[str, ...] = (
    "I'm not sure I understood. I can help with passwords and MFA, the VPN, Wi-Fi, printers, email and "
    "Teams, software installs, access requests and broken or lost hardware. Could you rephrase your question?",
    "That one is outside what I know. Please open a ticket at support.northwind.example and an engineer will "
    "get back to you, usually within four working hours, or call extension 4357 if it is urgent.",
    "I don't have an answer for that yet. Try describing the problem in a few words (for example \"VPN not "
    "connecting\" or \"need Visio\"), or ask for a person and I'll tell you how to reach the service desk.",
)

_WORD = re.compile(r"[a-z0-9][a-z0-9+-]*")


def _matches(keyword: str, text: str, words: set[str]) -> bool:
    if " " in keyword:
        return keyword in text
    if keyword in words:
        return True
    return len(keyword) >= 4 and any(word.startswith(keyword) for word in words)


def pick_answer(question: str) -> str:
    """The answer of the topic with the most keywords in ``question``, the first on a tie; else a fallback
    (the same one for the same question)."""
    text = " ".join(_WORD.findall(question.lower()))
    words = set(text.split())
    best, score = None, 0
    for topic in TOPICS:
        hits = sum(_matches(keyword, text, words) for keyword in topic.keywords)
        if hits > score:
            best, score = topic, hits
    if best is not None:
        return best.answer
    return FALLBACKS[zlib.crc32(text.encode()) % len(FALLBACKS)]


def words(answer: str) -> list[str]:
    """``answer`` cut into the pieces the assistant streams: each word with the spaces or line break after it."""
    return re.findall(r"\S+\s*", answer)
