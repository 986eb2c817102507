"""A fixed set of English sentences for measuring speech recognition.

Sixty sentences of the kind a voice assistant hears: questions, requests, short
replies and longer statements, 5 to 12 words, with no digits (so spelling numbers
out or not does not count as an error). Synthesise them with
:func:`~remotemedia.testing.synthesize_speech` and compare the transcripts with
:func:`~remotemedia.testing.word_error_rate`; the same list is used by the tests
and by the benchmarks, so their figures compare.
"""

from __future__ import annotations

__all__ = ["TEST_SENTENCES"]

TEST_SENTENCES: tuple[str, ...] = (
    "What is the weather like in Paris this afternoon?",
    "Please set a timer for ten minutes.",
    "Can you remind me to call my sister tomorrow morning?",
    "I would like to book a table for two people tonight.",
    "Turn off the lights in the living room.",
    "How long does it take to drive to the airport from here?",
    "Thank you, that was very helpful.",
    "Play some quiet music while I read.",
    "The meeting has been moved to Thursday afternoon.",
    "Could you read me the last message again, slowly this time?",
    "Yes, that sounds good to me.",
    "No, I meant the other one.",
    "What time does the pharmacy close on Sundays?",
    "Add milk, eggs and bread to my shopping list.",
    "I think the train leaves at half past seven.",
    "Send a message to Anna saying I will be late.",
    "Tell me a short story about a dragon who learns to cook.",
    "How do you say good morning in Spanish?",
    "The package should arrive sometime next week.",
    "Wait, stop, that is not what I asked for.",
    "My flight was cancelled, so I need a hotel near the station.",
    "Is there a good bakery within walking distance?",
    "Please speak a little more slowly.",
    "What is the capital city of Australia?",
    "I left my keys somewhere in the kitchen.",
    "Let us start the presentation with the budget figures.",
    "Call the doctor's office and ask for the first free appointment.",
    "The children are playing football in the garden.",
    "Remind me what we talked about yesterday.",
    "Open the window, it is getting warm in here.",
    "How many cups of flour go into a loaf of bread?",
    "I am looking for a quiet place to work this afternoon.",
    "Sorry, could you repeat the last part?",
    "The river flooded the lower fields after the storm.",
    "Which bus goes to the museum?",
    "Cancel my alarm for tomorrow.",
    "We should leave early to avoid the traffic on the bridge.",
    "Good night, see you in the morning.",
    "Translate this sentence into French, please.",
    "The library opens at nine and closes at six.",
    "Find me a recipe for vegetable soup without onions.",
    "What did the manager say about the new schedule?",
    "I need to return these shoes because they are too small.",
    "Turn the volume down a little.",
    "Is it going to rain during the weekend?",
    "The engineers fixed the bridge before the winter came.",
    "Book a taxi to pick me up at the front door.",
    "How far is the nearest petrol station?",
    "Please summarize the article in three sentences.",
    "My brother is moving to a small town near the coast.",
    "That is exactly what I was looking for.",
    "Show me the photos from last summer.",
    "The concert was louder than we expected.",
    "Can you check whether the shop has my size in stock?",
    "Water the plants on the balcony every second day.",
    "What is the difference between a virus and a bacterium?",
    "We ran out of coffee again this morning.",
    "Start a new shopping list for the party on Saturday.",
    "The old clock in the hall stopped working last year.",
    "Okay, let us try that one more time.",
)
